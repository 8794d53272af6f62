"""Self-training from the model's own scored samples: ReST-EM and rejection-sampling fine-tuning."""

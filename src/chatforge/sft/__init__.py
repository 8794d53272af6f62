"""The data side of supervised fine-tuning: reading conversations, system prompts, answer-only labels.

- `formats`: `read_conversations` / `read_conversation_file` turn OpenAI `messages`, ShareGPT, Alpaca and
  prompt/completion records into `Conversation`s (checked messages + the record's other fields),
  rejecting malformed ones into the `RejectLog`; `SystemPrompts` adds a per-task system prompt.
- `masking`: `encode_conversation` / `encode_conversations` give `input_ids` and labels that
  supervise every assistant answer and its end-of-turn token only; `end_of_turn_ids` (generation stops).
- `batches`: training rows from encoded examples (packing without cross-talk, or padding).

See docs/sft.md. Import the submodules directly (this package imports nothing, like `tokenizer`).
"""

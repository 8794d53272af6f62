"""The base of every typed config: unknown keys are errors, assignments are validated."""

from pydantic import BaseModel, ConfigDict


class StrictModel(BaseModel):
    """Pydantic model that forbids unknown keys and validates on assignment.

    Field help lives in `Field(description=...)`; `chatforge <stage> --help` prints it.
    """

    model_config = ConfigDict(extra="forbid", validate_assignment=True, protected_namespaces=())

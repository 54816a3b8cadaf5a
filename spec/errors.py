"""The error an implementation raises for input the spec says it must refuse (chapter 8)."""


class InvalidInputError(ValueError):
    """Input outside what a GPT-2 accepts: token ids out of range, a sequence longer than the
    context, an empty batch, labels of the wrong shape or value. The message says what was wrong
    and what to do. It subclasses ``ValueError`` so callers catching that keep working."""

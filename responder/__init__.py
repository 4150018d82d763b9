"""responder — keeps the publication deadlines of serious emergencies."""

__version__ = "0.1.0"

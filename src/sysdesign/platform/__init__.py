"""Runtime shared by every system: no domain logic lives here."""

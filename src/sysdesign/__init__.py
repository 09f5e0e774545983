"""sysdesign."""

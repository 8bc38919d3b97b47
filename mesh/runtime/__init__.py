"""The agent runtime: turns an `Agent` declaration into a serving, announced, traced process."""

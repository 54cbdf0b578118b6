"""question -> hits -> context -> answer."""

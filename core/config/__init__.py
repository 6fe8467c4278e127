"""The one typed config object and what bounds it: schema (YAML -> Config), limits, recipes."""

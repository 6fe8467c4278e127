"""The one typed config object and what bounds it: ``schema`` (YAML -> Config, every option's
help), ``limits`` (every option's declared range, the one override parser), ``recipes``
(recipes as forms) and ``footprint`` (the memory a recipe needs to train, by arithmetic)."""

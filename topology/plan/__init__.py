"""The topology plan: the model, its expression language, the Python DSL, the YAML loader, run-time rules, describe."""

"""The operator tools' subcommands (keys, pass, provision, cmd, lists, history)."""

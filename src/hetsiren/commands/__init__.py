"""One module per `hetsiren` subcommand: docstring, add_args(parser), main(args)."""

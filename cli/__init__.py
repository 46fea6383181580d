"""The `suture` command line: `suture edit` applies edit requests to a model, `suture demo` shows
editing and reverting on SmolLM2. `cli.main.main(argv)` is the entry point and returns the exit code."""

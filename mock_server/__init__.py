"""A werkzeug mock of the SiliconCompiler remote job server (being built)."""

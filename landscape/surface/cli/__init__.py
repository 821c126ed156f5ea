"""The command line of `landscape.surface` beyond its entry point (`landscape.surface.__main__`)."""

"""One harness for every test: the committed photographs, subprocess commands, servers."""

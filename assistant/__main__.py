"""`python -m assistant` (and `accelerate launch -m assistant index FOLDER`) runs the imgchat CLI."""

from assistant.cli import main

main()

"""One pyinfra @deploy function per concern; deploy.py calls them in order."""

"""``python -m remedy_devenv.demoapp --role ROLE --port P`` (how DemoProcess starts a role)."""

from .process import main

main()

"""An emulated BlueZ (python-dbusmock on a private D-Bus) for driving bleak's real BlueZ backend."""

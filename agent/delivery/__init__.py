"""Out to the operator: the ``delivery`` thread, snapshots, the SQLite outbox and the MQTT link that
drains it, replies to commands, ``status``/``stats``/``model/reported``."""

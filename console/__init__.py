"""Operator-side tools (never on the device): ``binwatch alerts watch``; the web console comes next."""

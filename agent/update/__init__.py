"""Fleet updates on the device: follow the desired model, fetch, verify, load, switch, report."""

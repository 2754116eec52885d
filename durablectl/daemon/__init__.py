"""The daemon: one process per database that loads workflow modules and runs a DurableService,
controlled over a Unix socket. Only this package imports watchfiles."""

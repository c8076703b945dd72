"""Consoles over consumers this process did not start (``shard-console attach``): a lease
table's (a KCL application, a shard-console fleet) or a local database's; what is wrong with
them (diagnosis) and how far behind they are (the lag probe)."""

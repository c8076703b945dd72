"""``shard-console serve``: the console in a browser, one ``attach`` per browser session."""

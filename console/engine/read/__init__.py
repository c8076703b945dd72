"""Reading a stream without consuming it: ``tail``, the console's records browser, and a
shard's read budget shared by whoever reads it in this process."""

"""What every layer of fitplan shares: byte units, the errors a user can act on, safe file reading and writing.
Imports nothing but the standard library."""

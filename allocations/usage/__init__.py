"""Usage: reading scheduler accounting output, ingesting it and charging it to the ledger."""

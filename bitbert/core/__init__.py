"""The bottom layer: values every other layer shares and nothing above it decides again —
`QuantConfig` (config), the setting rules (validate), the packed file format (packed_schema),
atomic writes (atomic) and the Hub-or-folder loader (hub). Imports no other bitbert layer."""

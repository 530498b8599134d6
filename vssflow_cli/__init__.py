"""vssflow: foley and lip-synced dubbing for local videos (VSSFlow, flow-matching DiT)."""

__version__ = "0.1.0"

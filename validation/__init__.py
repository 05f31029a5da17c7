"""Store validation: pandera-checked Zarr simulation stores."""

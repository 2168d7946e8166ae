"""What this firmware is. BUILD_UNIX is the clock's floor: a node never
believes a time before it (lib/clock). Kept at the release date of the
firmware's code, before any clock a node of this version can meet."""

VERSION = "0.6.0"
BUILD_UNIX = 1764547200  # 2025-12-01

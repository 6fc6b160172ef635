"""The embedded default: a miniature text-to-image testbed trained from the bundled digits."""

"""``stator serve``: a whole local deployment (frontend + router + workers) from one command."""

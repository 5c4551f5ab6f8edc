"""Where raw data comes from: files in real formats, downloads, and offline samples shipped by packages."""

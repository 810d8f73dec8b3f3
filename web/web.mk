# Page assets: filled in by the browser work.
.PHONY: web-assets
web-assets:

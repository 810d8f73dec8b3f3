# Guest image: filled in by the guest-image work.
.PHONY: guest-image
guest-image:

"""The door-neutral middle: conversation, composer and filters, tool and JSON emulation, usage, media."""

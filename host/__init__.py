"""Host adapters: ComfyUI's services inside the host, standalone fallbacks outside."""

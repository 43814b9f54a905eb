"""Every node = one contract, two backends. Each module here pairs a local engine
(`local/`) with its Segmind call (`segmind/`) behind one signature, and
`backend.run` picks the side by the shared policy; node classes only map inputs."""

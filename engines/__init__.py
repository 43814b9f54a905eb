"""Every node = one contract, two backends. Each module here pairs a local engine
(`local/`) with its Segmind call (`segmind/`) behind one signature, and
`backend.run` picks the side (local | auto | segmind); node classes only map inputs."""

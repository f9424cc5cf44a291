"""The fleet simulator: virtual devices that run the real agent (`sim run`) and the
accelerated rehearsal lab (`lab rehearse`). See docs/simulator.md."""

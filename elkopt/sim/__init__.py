"""The network simulator: topologies as data, routed flows, max-min fair sharing."""

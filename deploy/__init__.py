"""Running avatar-bff as a deployment: the local cluster, nginx config, fault scripts."""

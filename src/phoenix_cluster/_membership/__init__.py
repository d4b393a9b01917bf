"""L3: membership: who is in the cluster (SWIM arrives with the membership issue)."""

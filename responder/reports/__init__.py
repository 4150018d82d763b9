"""What a reviewer reads and prints: the evidence of a breach assembled from the store
(:mod:`.evidence`), its seal in the audit log (:mod:`.seal`), the per-incident report
(:mod:`.incident`) and the quarterly notice per unit (:mod:`.quarterly`), rendered as HTML,
CSV or JSON (:mod:`.render`)."""

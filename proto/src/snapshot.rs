//! Which projection drew a stored 2-D snapshot: one name shared by the worker (which computes it),
//! the wire, the store's `snapshots.projection` column and the dashboard (which labels plots).

named_enum!(
    /// How a snapshot's 2-D points were obtained from the embedding.
    #[derive(Default)]
    SnapshotProjection, "snapshot projection" {
    /// The embedding itself (`embedding_dim <= 2`).
    #[default]
    Identity => "none",
    /// The two principal axes.
    Pca => "pca",
    /// Barnes-Hut t-SNE of the snapshot subset.
    Tsne => "tsne",
});

impl SnapshotProjection {
    /// What snapshots stored before projections were named mean: `projected` was only ever set
    /// for PCA.
    pub fn from_projected(projected: bool) -> Self {
        if projected { Self::Pca } else { Self::Identity }
    }

    /// Whether the points are a projection of more than two dimensions.
    pub fn is_projected(self) -> bool {
        self != Self::Identity
    }

    /// How a plot names it (empty when the points are the embedding itself).
    pub fn label(self) -> &'static str {
        match self {
            Self::Identity => "",
            Self::Pca => "PCA",
            Self::Tsne => "t-SNE",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::SnapshotProjection;

    #[test]
    fn names_round_trip_and_legacy_flag_maps() {
        for p in SnapshotProjection::ALL {
            assert_eq!(p.as_str().parse::<SnapshotProjection>().unwrap(), *p);
        }
        assert!("umap".parse::<SnapshotProjection>().is_err());
        assert_eq!(
            SnapshotProjection::from_projected(true),
            SnapshotProjection::Pca
        );
        assert_eq!(
            SnapshotProjection::from_projected(false),
            SnapshotProjection::Identity
        );
        assert!(!SnapshotProjection::Identity.is_projected());
        assert!(SnapshotProjection::Tsne.is_projected());
    }
}

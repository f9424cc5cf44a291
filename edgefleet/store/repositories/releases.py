"""Artifacts and releases tables."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection, Row, insert, select, update

from edgefleet.core.updates.release import Artifact, ArtifactKind, Ref, Release
from edgefleet.errors import Conflict, NotFound
from edgefleet.store.tables import artifacts, releases


def _to_artifact(row: Row[Any]) -> Artifact:
    return Artifact(
        name=row.name,
        version=row.version,
        kind=ArtifactKind(row.kind),
        sha256=row.sha256,
        size_bytes=row.size_bytes,
        file_name=row.file_name,
        requirements=tuple(row.requirements),
        facts=row.facts,
        created_by=row.created_by,
        created_at=row.created_at,
    )


def _to_release(row: Row[Any]) -> Release:
    return Release(
        name=row.name,
        version=row.version,
        artifacts=tuple(Ref(a["name"], a["version"]) for a in row.artifacts),
        created_by=row.created_by,
        created_at=row.created_at,
        targets_version=row.targets_version,
    )


class ArtifactRepository:
    def __init__(self, connection: Connection) -> None:
        self._c = connection

    def find(self, ref: Ref) -> Artifact | None:
        match = (artifacts.c.name == ref.name) & (artifacts.c.version == ref.version)
        row = self._c.execute(select(artifacts).where(match)).first()
        return _to_artifact(row) if row else None

    def get(self, ref: Ref) -> Artifact:
        artifact = self.find(ref)
        if artifact is None:
            raise NotFound(f"no artifact {ref}", code="artifact_not_found")
        return artifact

    def uses_blob(self, sha256: str) -> bool:
        """Whether any artifact's file is this blob."""
        found = self._c.execute(select(artifacts.c.name).where(artifacts.c.sha256 == sha256))
        return found.first() is not None

    def names_of_blob(self, sha256: str) -> set[str]:
        """The names of the artifacts whose file is this blob (versions may share one)."""
        found = self._c.execute(select(artifacts.c.name).where(artifacts.c.sha256 == sha256))
        return {row.name for row in found}

    def all(self, name: str | None = None) -> list[Artifact]:
        query = select(artifacts).order_by(artifacts.c.name, artifacts.c.created_at)
        if name is not None:
            query = query.where(artifacts.c.name == name)
        return [_to_artifact(r) for r in self._c.execute(query)]

    def insert(self, artifact: Artifact) -> None:
        if self.find(artifact.ref) is not None:
            raise Conflict(
                f"artifact {artifact.ref} already exists; versions are immutable, "
                "push a new version",
                code="artifact_exists",
            )
        self._c.execute(
            insert(artifacts).values(
                name=artifact.name,
                version=artifact.version,
                kind=artifact.kind.value,
                sha256=artifact.sha256,
                size_bytes=artifact.size_bytes,
                file_name=artifact.file_name,
                requirements=list(artifact.requirements),
                facts=dict(artifact.facts),
                created_by=artifact.created_by,
                created_at=artifact.created_at,
            )
        )


class ReleaseRepository:
    def __init__(self, connection: Connection) -> None:
        self._c = connection

    def find(self, ref: Ref) -> Release | None:
        row = self._c.execute(
            select(releases).where(releases.c.name == ref.name, releases.c.version == ref.version)
        ).first()
        return _to_release(row) if row else None

    def get(self, ref: Ref) -> Release:
        release = self.find(ref)
        if release is None:
            raise NotFound(f"no release {ref}", code="release_not_found")
        return release

    def all(self) -> list[Release]:
        query = select(releases).order_by(releases.c.name, releases.c.created_at)
        return [_to_release(r) for r in self._c.execute(query)]

    def insert(self, release: Release) -> None:
        if self.find(release.ref) is not None:
            raise Conflict(f"release {release.ref} already exists", code="release_exists")
        self._c.execute(
            insert(releases).values(
                name=release.name,
                version=release.version,
                artifacts=[{"name": a.name, "version": a.version} for a in release.artifacts],
                created_by=release.created_by,
                created_at=release.created_at,
                targets_version=release.targets_version,
            )
        )

    def mark_signed(self, ref: Ref, targets_version: int) -> None:
        self._c.execute(
            update(releases)
            .where(releases.c.name == ref.name, releases.c.version == ref.version)
            .values(targets_version=targets_version)
        )

"""Question pairs for the semantic cache: a cached question, then a new one.

PARAPHRASES ask the same thing in other words (a hit is welcome); NEAR_MISSES differ in
one thing that changes the answer (a content word, a number, a negation, a unit or an
entity) and must never be served the cached answer. Used by tests/test_semantic_cache.py
and bench/semantic_cache.py (figures in docs/robustness.md).
"""

PARAPHRASES = [
    ("How many daily snapshots does the default retention policy keep?",
     "How many daily snapshots are kept by the default retention policy?"),
    ("How do I restore a deleted file?", "How can I restore a deleted file?"),
    ("What does the Pro plan cost?", "What is the price of the Pro plan?"),
    ("How do I encrypt my backups?", "How can I encrypt my backups?"),
    ("Where are backups stored?", "Where are the backups stored?"),
    ("How do I install the agent on Ubuntu?", "How do I install the agent on Ubuntu"),
    ("How do I delete old snapshots?", "How do I remove old snapshots?"),
    ("How do I change the backup schedule?", "How do I modify the backup schedule?"),
    ("Which storage backends are supported?", "Which storage backends are supported by the product?"),
    ("What is the maximum file size?", "What's the maximum file size?"),
    ("How do I enable compression?", "How do I turn on compression?"),
    ("How do I disable telemetry?", "How do I turn off telemetry?"),
    ("How do I start a backup manually?", "How can I start a backup manually?"),
    ("What happens when a backup fails?", "What happens if a backup fails?"),
    ("How do I rotate the repository key?", "How can I rotate the repository key?"),
    ("Is Windows supported?", "Is Windows supported by the agent?"),
    ("How do I fix error E1042?", "How do I resolve error E1042?"),
    ("How long does a restore take?", "How long does a restore usually take?"),
    ("What are the system requirements?", "What are the system requirements for the agent?"),
    ("How do I configure the S3 backend?", "How do I set up the S3 backend?"),
    ("Can I back up to Azure?", "Is it possible to back up to Azure?"),
    ("How do I list all snapshots?", "How do I show all snapshots?"),
    ("How do I verify a backup?", "How can I verify a backup?"),
    ("How do I create a new repository?", "How do I make a new repository?"),
    ("What does deduplication do?", "What does deduplication do exactly?"),
    ("How often should I run a prune?", "How often should I prune?"),
    ("Where do I find the logs?", "Where can I find the logs?"),
    ("How do I upgrade the agent?", "How can I upgrade the agent?"),
    ("What ports does the daemon use?", "Which ports does the daemon use?"),
    ("How do I exclude a folder from backups?", "How can I exclude a folder from backups?"),
    ("Who do I contact about a security issue?", "Whom do I contact about a security issue?"),
    ("How do I stop a running backup?", "How can I stop a running backup?"),
]

NEAR_MISSES = [
    # one content word
    ("How many daily snapshots does the default retention policy keep?",
     "How many weekly snapshots does the default retention policy keep?"),
    ("How many daily snapshots does the default retention policy keep?",
     "How many daily snapshots does the default retention policy delete?"),
    ("What happens before a backup starts?", "What happens after a backup starts?"),
    ("How do I restore a deleted file?", "How do I restore a deleted folder?"),
    ("How do I encrypt my backups?", "How do I decrypt my backups?"),
    ("Where are backups stored?", "When are backups stored?"),
    ("How do I enable compression?", "How do I enable encryption?"),
    ("What is the maximum file size?", "What is the minimum file size?"),
    ("How do I start a backup manually?", "How do I stop a backup manually?"),
    ("How do I upgrade the agent?", "How do I downgrade the agent?"),
    ("What does the Pro plan cost?", "What does the Pro plan include?"),
    ("How do I install the agent on Ubuntu?", "How do I uninstall the agent on Ubuntu?"),
    ("Which storage backends are supported?", "Which storage backends are deprecated?"),
    ("How long are monthly snapshots kept?", "How long are yearly snapshots kept?"),
    ("How do I import a repository?", "How do I export a repository?"),
    ("What is the default upload bandwidth limit?", "What is the default download bandwidth limit?"),
    # a number
    ("What changed in version 3.1?", "What changed in version 3.2?"),
    ("How do I fix error E1042?", "How do I fix error E1043?"),
    ("Can I keep 30 daily snapshots?", "Can I keep 60 daily snapshots?"),
    ("What does error code 404 mean?", "What does error code 403 mean?"),
    # a negation
    ("Why is the backup running?", "Why is the backup not running?"),
    ("Which files are encrypted?", "Which files are not encrypted?"),
    ("Can I restore without the repository key?", "Can I restore with the repository key?"),
    ("Is Windows supported?", "Is Windows unsupported?"),
    # a unit
    ("Is the limit 10 GB per file?", "Is the limit 10 MB per file?"),
    ("Does the job time out after 30 minutes?", "Does the job time out after 30 hours?"),
    ("Is the retention period measured in days?", "Is the retention period measured in weeks?"),
    # an entity
    ("How do I configure the S3 backend?", "How do I configure the Azure backend?"),
    ("Is Windows supported?", "Is macOS supported?"),
    ("How do I install the agent on Ubuntu?", "How do I install the agent on Debian?"),
    ("How do I back up a PostgreSQL database?", "How do I back up a MySQL database?"),
    ("Does the Pro plan include SSO?", "Does the Team plan include SSO?"),
]

package hos.devstack;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardCopyOption;
import java.util.Locale;
import java.util.concurrent.CountDownLatch;

import org.codelibs.opensearch.runner.OpenSearchRunner;
import org.opensearch.Version;
import org.opensearch.cluster.health.ClusterHealthStatus;

/**
 * One OpenSearch node on loopback for the dev stack and the tests; started by devstack/engines.py.
 *
 * <p>Usage: {@code EmbeddedOpenSearch HOME HTTP_PORT TRANSPORT_PORT ANNOUNCE_FILE [NODE_NAME SEED_HOSTS
 * MANAGERS]}. With the last three (a cluster of several such processes: this node's name, every
 * node's transport address and every node's name, comma-separated) it discovers its peers on
 * loopback instead of running as a single node. It keeps its
 * data, config and logs under HOME, listens on 127.0.0.1 only, and once the cluster is at least
 * yellow writes one JSON object {@code {"url": ..., "version": ..., "distribution": "opensearch"}}
 * to ANNOUNCE_FILE (written aside and renamed, so a reader never sees half of it; stdout is
 * captured by OpenSearch's logging, hence a file). A failure to start writes {@code {"error": ...}}
 * there instead and exits 1. SIGTERM closes the node cleanly; the parent-death signal set by the Python side covers
 * a parent that dies without stopping it. Never used in production, which runs Elasticsearch.
 */
public final class EmbeddedOpenSearch {

    /** Modules loaded from the classpath: what the mapping and queries need, plus what operators expect. */
    private static final String MODULES = String.join(",",
            "org.opensearch.analysis.common.CommonAnalysisPlugin", // edge_ngram, asciifolding, synonyms
            "org.opensearch.index.mapper.MapperExtrasPlugin", // scaled_float
            "org.opensearch.transport.Netty4Plugin", // the HTTP and transport layers
            "org.opensearch.painless.PainlessPlugin",
            "org.opensearch.index.reindex.ReindexPlugin");

    private EmbeddedOpenSearch() {
    }

    public static void main(final String[] args) throws Exception {
        if (args.length != 4 && args.length != 7) {
            System.err.println("usage: EmbeddedOpenSearch HOME HTTP_PORT TRANSPORT_PORT ANNOUNCE_FILE"
                    + " [NODE_NAME SEED_HOSTS MANAGERS]");
            System.exit(2);
        }
        final boolean clustered = args.length == 7;
        final String nodeName = clustered ? args[4] : "hos-dev";
        final Path home = Path.of(args[0]).toAbsolutePath();
        final String httpPort = args[1];
        final String transportPort = args[2];
        final Path announce = Path.of(args[3]).toAbsolutePath();
        Files.createDirectories(home);

        final OpenSearchRunner runner = new OpenSearchRunner();
        final CountDownLatch closed = new CountDownLatch(1);
        Runtime.getRuntime().addShutdownHook(new Thread(() -> {
            try {
                runner.close();
            } catch (final IOException e) {
                System.err.println("closing the node: " + e);
            } finally {
                closed.countDown();
            }
        }, "hos-shutdown"));
        try {
            runner.onBuild((index, settings) -> {
                settings.put("network.host", "127.0.0.1");
                settings.put("http.port", httpPort);
                settings.put("transport.port", transportPort);
                settings.put("node.name", nodeName);
                if (clustered) {
                    settings.putList("discovery.seed_hosts", args[5].split(","));
                    // Read only when the cluster first forms; a restarted node rejoins from its data.
                    settings.putList("cluster.initial_cluster_manager_nodes", args[6].split(","));
                    // A killed peer is noticed in seconds rather than the default ~30 s.
                    settings.put("cluster.fault_detection.follower_check.timeout", "2s");
                    settings.put("cluster.fault_detection.follower_check.retry_count", "2");
                    settings.put("cluster.fault_detection.leader_check.timeout", "2s");
                    settings.put("cluster.fault_detection.leader_check.retry_count", "2");
                } else {
                    settings.put("discovery.type", "single-node");
                }
                // A nearly full disk must not turn every index read-only under the tests.
                settings.put("cluster.routing.allocation.disk.threshold_enabled", false);
                // Elasticsearch 8+ refuses wildcard deletes by default; behave like production.
                settings.put("action.destructive_requires_name", false);
            }).build(OpenSearchRunner.newConfigs()
                    .basePath(home.toString())
                    .numOfNode(1)
                    .clusterName("hos-dev")
                    .moduleTypes(MODULES)
                    .printOnFailure());
            awaitYellow(runner, clustered ? 180_000L : 0L);
        } catch (final Throwable e) {
            Throwable root = e;
            while (root.getCause() != null && root.getCause() != root) {
                root = root.getCause();
            }
            announce(announce, "{\"error\": " + quote(e + (root == e ? "" : " (cause: " + root + ")")) + "}");
            System.exit(1);
        }
        announce(announce, String.format(Locale.ROOT,
                "{\"url\": \"http://127.0.0.1:%s\", \"version\": \"%s\", \"distribution\": \"opensearch\"}",
                httpPort, Version.CURRENT));
        closed.await();
    }

    /**
     * The runner's ensureYellow gives up after 30 s without a cluster manager; a cluster whose
     * JVMs start together on two busy cores can take longer to elect one, so it is asked again.
     */
    private static void awaitYellow(final OpenSearchRunner runner, final long patienceMs) throws InterruptedException {
        final long deadline = System.currentTimeMillis() + patienceMs;
        while (true) {
            try {
                // With printOnFailure a timed-out wait returns RED instead of throwing.
                if (runner.ensureYellow() != ClusterHealthStatus.RED || System.currentTimeMillis() > deadline) {
                    return;
                }
            } catch (final RuntimeException e) {
                if (System.currentTimeMillis() > deadline) {
                    throw e;
                }
            }
            Thread.sleep(500);
        }
    }

    private static void announce(final Path file, final String json) throws IOException {
        final Path aside = file.resolveSibling(file.getFileName() + ".tmp");
        Files.writeString(aside, json + "\n");
        Files.move(aside, file, StandardCopyOption.ATOMIC_MOVE);
    }

    private static String quote(final String text) {
        final StringBuilder out = new StringBuilder("\"");
        for (final char c : text.toCharArray()) {
            if (c == '"' || c == '\\') {
                out.append('\\').append(c);
            } else if (c < 0x20) {
                out.append(String.format(Locale.ROOT, "\\u%04x", (int) c));
            } else {
                out.append(c);
            }
        }
        return out.append('"').toString();
    }
}

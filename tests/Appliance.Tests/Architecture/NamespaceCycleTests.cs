using Portcullis.Appliance.Gateway;
using Xunit;

namespace Portcullis.Appliance.Tests.Architecture;

// The namespaces of the appliance form layers: no namespace may depend, directly or through
// others, on one that depends on it. The graph comes from the compiled assembly, so a fully
// qualified name or a reference hidden in a method body counts as much as a using directive.
public class NamespaceCycleTests
{
    private const string Root = "Portcullis.Appliance";

    // Edges that still close a cycle and belong to other work; delete an entry once its edge is gone.
    //   Status → Gateway          the status pages read GatewayRuntime (Gateway → Status: metrics, the server)
    //   Configuration → Access    ConfigLoader normalises [relay] domains with Access.MailDomain
    //   Configuration → Policy    [scan] enums and words live in Policy (Policy → Configuration: BannedAttachments.From)
    private static readonly (string From, string To)[] KnownDebt =
    [
        ("Status", "Gateway"),
        ("Configuration", "Access"),
        ("Configuration", "Policy"),
    ];

    [Fact]
    public void ApplianceNamespacesHaveNoCycle()
    {
        var graph = NamespaceGraph.Read(typeof(GatewaySession).Assembly.Location, Root);
        foreach (var (from, to) in KnownDebt)
            if (graph.TryGetValue($"{Root}.{from}", out var edges)) edges.Remove($"{Root}.{to}");

        var cycle = NamespaceGraph.FindCycle(graph);

        Assert.True(cycle is null, $"namespace cycle: {string.Join(" -> ", cycle?.Select(n => n[(Root.Length + 1)..]) ?? [])}");
    }

    [Fact]
    public void GraphHasTheEdgesTheSourceShows()
    {
        var graph = NamespaceGraph.Read(typeof(GatewaySession).Assembly.Location, Root);

        Assert.Contains($"{Root}.Scanning", graph[$"{Root}.Gateway"]);      // GatewayContext.Scanner: a signature
        Assert.Contains($"{Root}.Messages", graph[$"{Root}.Notifications"]); // MessageDate.Rfc5322: a call
        Assert.DoesNotContain($"{Root}.Gateway", graph[$"{Root}.Systemd"]);
        Assert.DoesNotContain($"{Root}.Cli", graph[$"{Root}.Gateway"]);
        Assert.DoesNotContain($"{Root}.Gateway", graph[$"{Root}.Notifications"]);
        Assert.DoesNotContain($"{Root}.Gateway", graph[$"{Root}.Access"]);
    }

    // The fixture namespaces below depend on each other, one way through a field and the other
    // only inside a method body: the reader must see both and report the cycle.
    [Fact]
    public void FindsACycleCompiledIntoAnAssembly()
    {
        const string prefix = "Portcullis.Appliance.Tests.Architecture.Fixture";
        var graph = NamespaceGraph.Read(typeof(NamespaceCycleTests).Assembly.Location, prefix);

        Assert.Equal([$"{prefix}.Sender"], graph[$"{prefix}.Receiver"]);
        Assert.Equal([$"{prefix}.Receiver"], graph[$"{prefix}.Sender"]);
        Assert.Empty(graph[$"{prefix}.Bystander"]);
        var cycle = NamespaceGraph.FindCycle(graph);
        Assert.NotNull(cycle);
        Assert.Equal(cycle[0], cycle[^1]);
        Assert.Equal(3, cycle.Count);
    }

    [Fact]
    public void FindsACycleInASmallGraph()
    {
        var acyclic = Graph(("A", "B"), ("B", "C"), ("A", "C"), ("D", "A"));
        Assert.Null(NamespaceGraph.FindCycle(acyclic));

        var cyclic = Graph(("A", "B"), ("B", "C"), ("C", "D"), ("D", "B"), ("A", "E"));
        Assert.Equal(["B", "C", "D", "B"], NamespaceGraph.FindCycle(cyclic));
    }

    private static Dictionary<string, SortedSet<string>> Graph(params (string From, string To)[] edges)
    {
        var graph = new Dictionary<string, SortedSet<string>>(StringComparer.Ordinal);
        foreach (var (from, to) in edges)
        {
            if (!graph.TryGetValue(from, out var set)) graph[from] = set = new SortedSet<string>(StringComparer.Ordinal);
            set.Add(to);
        }
        return graph;
    }
}

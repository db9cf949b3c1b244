using System.Net;
using System.Text;
using Portcullis.Appliance.Gateway;
using Xunit;

namespace Portcullis.Appliance.Tests.Gateway;

// The trace headers: client-supplied text cannot break out of its line or its comment, and text
// that needs no change is taken as it is.
public sealed class MessageHeadersTests
{
    private static string Build(string helo, string? status = null, IPEndPoint? client = null) => Encoding.UTF8.GetString(
        MessageHeaders.Build("gw.test", helo, client, "ESMTP", "ID1", ["bob@dest.test"], new DateTimeOffset(2026, 12, 6, 6, 0, 0, TimeSpan.Zero),
            "portcullis", status));

    [Fact]
    public void Controls_and_parentheses_from_the_client_are_replaced()
    {
        var headers = Build("evil)\r\nX-Injected: yes\u0085(", status: "Infected\r\nX-Other: 1");

        Assert.StartsWith("Received: from evil???X-Injected: yes?? (unknown)\r\n\tby gw.test (Portcullis) with ESMTP id ID1\r\n\tfor <bob@dest.test>;", headers);
        Assert.Contains("X-Virus-Status: Infected??X-Other: 1\r\n", headers);
        Assert.DoesNotContain("\r\nX-Injected", headers);
    }

    [Fact]
    public void Plain_text_and_the_client_address_are_written_as_they_are()
    {
        var headers = Build("mail.client.test", status: "Clean", client: new IPEndPoint(IPAddress.Parse("192.0.2.7"), 2525));

        Assert.StartsWith("Received: from mail.client.test ([192.0.2.7])\r\n", headers);
        Assert.Contains("X-Virus-Status: Clean\r\n", headers);
    }
}

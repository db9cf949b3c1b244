using Portcullis.Appliance.Access;
using Portcullis.SmtpCore.Protocol;
using Xunit;

namespace Portcullis.Appliance.Tests.Queue;

public sealed class RecipientsFileTests
{
    private static SmtpPath Path(string address)
    {
        Assert.True(SmtpPath.TryParse("<" + address + ">", false, out var path, out var error), error);
        return path;
    }

    [Fact]
    public void AddressesAndDomainsMatchWithoutRegardToCase()
    {
        var known = RecipientsFile.Parse("# staff\nbob@Example.NET\n\n  @lists.example.net  \n");

        Assert.True(known.Knows(Path("bob@example.net")));
        Assert.True(known.Knows(Path("BOB@EXAMPLE.NET.")));
        Assert.True(known.Knows(Path("anyone@LISTS.example.net")));
        Assert.False(known.Knows(Path("carol@example.net")));
        Assert.False(known.Knows(Path("bob@other.example")));
        Assert.Equal(2, known.Count);
    }

    [Theory]
    [InlineData("bob")]
    [InlineData("bob@")]
    [InlineData("<bob@example.net>")]
    [InlineData("bob smith@example.net")]
    public void ABadLineIsAnErrorNamingIt(string line)
    {
        var e = Assert.Throws<FormatException>(() => RecipientsFile.Parse("ok@example.net\n" + line + "\n"));
        Assert.Contains("line 2", e.Message, StringComparison.Ordinal);
    }
}

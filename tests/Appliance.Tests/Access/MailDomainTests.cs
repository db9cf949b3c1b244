using Portcullis.Appliance.Access;
using Xunit;

namespace Portcullis.Appliance.Tests.Access;

// README: a domain is normalised by letter case and one trailing dot, nothing else (issue 11, item 10).
public sealed class MailDomainTests
{
    [Theory]
    [InlineData("Example.ORG.", "example.org")]
    [InlineData("example.org", "example.org")]
    [InlineData("EXÄMPLE.org", "exämple.org")]
    public void Normalize_folds_case_and_one_trailing_dot(string domain, string expected) =>
        Assert.Equal(expected, MailDomain.Normalize(domain));

    [Theory]
    [InlineData("example.org\u00A0")]
    [InlineData("\u00A0example.org")]
    [InlineData("example.org\u3000")]
    [InlineData("example.org\u0085")]
    [InlineData(" example.org")]
    [InlineData("example.org\t")]
    [InlineData("example.org..")]
    public void Normalize_keeps_everything_else_so_it_never_equals_the_local_domain(string domain) =>
        Assert.NotEqual("example.org", MailDomain.Normalize(domain));
}

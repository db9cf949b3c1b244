using Portcullis.Appliance.Configuration;
using Portcullis.Appliance.Policy;
using Xunit;

namespace Portcullis.Appliance.Tests.Policy;

public sealed class DetectionTests
{
    [Theory]
    [InlineData("Win.Trojan.Agent-123", DetectionClass.Virus)]
    [InlineData("Eicar-Signature", DetectionClass.Virus)]
    [InlineData("PUA.Win.Tool.Packed-1", DetectionClass.Pua)]
    [InlineData("Heuristics.Limits.Exceeded.MaxFileSize", DetectionClass.Heuristics)]
    [InlineData("Heuristics.Phishing.Email.SpoofedDomain", DetectionClass.Phishing)]
    [InlineData("Email.Phishing.Bank-1", DetectionClass.Phishing)]
    [InlineData("Sanesecurity.Phishing.Bank.1.UNOFFICIAL", DetectionClass.Phishing)]
    [InlineData("PUA.Test.X.UNOFFICIAL", DetectionClass.Pua)]
    [InlineData("Heuristics.Test.X.UNOFFICIAL", DetectionClass.Heuristics)]
    [InlineData("Portcullis.Test.EICAR.UNOFFICIAL", DetectionClass.Unofficial)]
    [InlineData("clam.exe.UNOFFICIAL", DetectionClass.Unofficial)]
    [InlineData("Banned.Extension.exe", DetectionClass.Banned)]
    [InlineData("Banned.DoubleExtension", DetectionClass.Banned)]
    [InlineData("pua.lowercase", DetectionClass.Virus)]
    public void ClassComesFromTheNameWithTheDocumentedPrecedence(string name, DetectionClass expected) =>
        Assert.Equal(expected, Detection.Classify(name));

    [Fact]
    public void ClassActionsFollowActionUnlessSet()
    {
        var scan = new ScanSection { Action = DetectionAction.Tag, ActionPua = DetectionAction.Discard };
        Assert.Equal(DetectionAction.Discard, scan.ActionFor(DetectionClass.Pua));
        Assert.Equal(DetectionAction.Tag, scan.ActionFor(DetectionClass.Heuristics));
        Assert.Equal(DetectionAction.Tag, scan.ActionFor(DetectionClass.Banned));
        Assert.Equal(DetectionAction.Tag, scan.ActionFor(DetectionClass.Virus));
    }
}
